"""
twisted-zero: stream zeros, chargen, random bytes or files to any Twisted
consumer, with a push producer that stops reading the moment the consumer
goes away.

Stream a file to a connection; it is opened and read in the reactor's
thread pool, unless its bytes are in the page cache::

    from twisted_zero import PathSource, StreamProducer, transportOutlet

    def connectionMade(self):
        producer = StreamProducer(source=PathSource("/srv/big.iso"))
        # The outlet sends straight to the socket where Twisted's TCP
        # transport allows it; without one, the stream is written to the
        # transport as by any producer.
        outlet = transportOutlet(self.transport)
        done = producer.startStreaming(self.transport, outlet)
        done.addCallback(lambda sent: self.transport.loseConnection())
"""

from ._httpoutlet import requestOutlet
from ._iopool import IOPool
from ._outlet import transportOutlet
from ._producer import ConnectionBroken, StreamProducer, StreamStopped
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
    "ConnectionBroken",
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
    "requestOutlet",
    "sourceFactory",
    "transportOutlet",
]
