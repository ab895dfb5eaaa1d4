"""
Twisted plugin dropin for mnet_twisted: ``mnet:`` endpoint strings and the
``mnet-echo`` twistd / twist plugin.

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
