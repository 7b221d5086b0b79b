import sys

if sys.argv[1:2] == ["proxy"]:  # ssh's ProxyCommand: connect while the rest imports
    from .preconnect import start

    start(sys.argv[2:])

from .cli import main

sys.exit(main())
