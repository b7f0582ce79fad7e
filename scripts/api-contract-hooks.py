"""schemathesis hooks of scripts/api-contract (loaded through SCHEMATHESIS_HOOKS).

Every request leaves from the loopback address in SCALEOUT_CONTRACT_SOURCE. nginx passes the
client's address on (X-Forwarded-For) and the instances count failed logins per address, so the
run's hundreds of failed logins fill a counter of its own: not the one of 127.0.0.1, which
the tests and anyone else on the machine share. schemathesis has no option for a source
address; its HTTP client (requests, over urllib3) takes one per connection, set here.
"""

import os

import urllib3.connection

SOURCE = os.environ.get("SCALEOUT_CONTRACT_SOURCE")
_init = urllib3.connection.HTTPConnection.__init__


def _init_from_source(self, *args, **kwargs):
    kwargs.setdefault("source_address", (SOURCE, 0))
    _init(self, *args, **kwargs)


if SOURCE:
    urllib3.connection.HTTPConnection.__init__ = _init_from_source
