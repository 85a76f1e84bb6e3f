"""
The C{twistd zero} plugin.
"""

from twisted.application.service import ServiceMaker

twistedZero = ServiceMaker(
    "twisted-zero",
    "twisted_zero.tap",
    "Stream zeros, chargen, random bytes or a file to every TCP client.",
    "zero",
)
