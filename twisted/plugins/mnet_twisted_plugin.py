"""
Twisted plugin dropin for mnet_twisted: ``mnet:`` endpoint strings and the
``mnet-echo`` and ``mnet-forward`` twistd / twist plugins.

Plugin discovery imports this module, so it only builds small parser objects
and a ServiceMaker; the protocol code is imported when it is used.
"""

from twisted.application.service import ServiceMaker

from mnet_twisted._parsers import MNETClientParser, MNETServerParser

mnetServerParser = MNETServerParser()
mnetClientParser = MNETClientParser()

mnetEcho = ServiceMaker(
    "MNET echo server",
    "mnet_twisted.tap",
    "Echo every MNET session back to its sender",
    "mnet-echo",
)

mnetForward = ServiceMaker(
    "MNET forwarder",
    "mnet_twisted.forward",
    "Forward connections between two endpoints (e.g. TCP and MNET)",
    "mnet-forward",
)
