"""HTTP to the sandbox's loopback addresses, never through a proxy.

A proxy variable in the environment must not send sandbox, test or bench
traffic anywhere but 127.0.0.0/8.
"""

import urllib.request

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
