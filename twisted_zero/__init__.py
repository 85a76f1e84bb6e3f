"""
twisted-zero: stream zeros, chargen, random bytes or files to any Twisted
consumer, with a push producer that stops reading the moment the consumer
goes away.

Stream a file to a connection; it is opened and read in the reactor's
thread pool, unless its bytes are in the page cache::

    from twisted_zero import PathSource, StreamProducer

    def connectionMade(self):
        producer = StreamProducer(source=PathSource("/srv/big.iso"))
        done = producer.startStreaming(self.transport)
        done.addCallback(lambda sent: self.transport.loseConnection())
"""

from ._iopool import IOPool
from ._producer import StreamProducer, StreamStopped
from ._protocol import StreamFactory, StreamProtocol
from ._resources import makeResource
from ._site import StreamSite
from ._sizes import parseSize
from ._sources import (
    ChargenSource,
    FileSource,
    IBlockingSource,
    IRewindableSource,
    ISendfileSource,
    ISharedChunkSource,
    ISource,
    PathSource,
    RandomSource,
    SourceError,
    SourceTruncated,
    ZeroSource,
    openFile,
    sourceFactory,
)

__version__ = "0.1.0"

__all__ = [
    "ChargenSource",
    "FileSource",
    "IBlockingSource",
    "IOPool",
    "IRewindableSource",
    "ISendfileSource",
    "ISharedChunkSource",
    "ISource",
    "PathSource",
    "RandomSource",
    "SourceError",
    "SourceTruncated",
    "StreamFactory",
    "StreamProducer",
    "StreamProtocol",
    "StreamSite",
    "StreamStopped",
    "ZeroSource",
    "__version__",
    "makeResource",
    "openFile",
    "parseSize",
    "sourceFactory",
]
