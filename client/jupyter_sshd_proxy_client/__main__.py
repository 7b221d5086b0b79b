import sys

if sys.argv[1:2] == ["proxy"]:  # ssh's ProxyCommand: connect while the rest imports
    from .startup import pause

    pause()  # no garbage collection until the WebSocket is open
    from .preconnect import start

    parsed = start(sys.argv[2:])
    if parsed is not None:  # config-ssh's command line: no argparse
        from types import SimpleNamespace

        from .cli import run

        args = SimpleNamespace(command="proxy", **parsed)  # argparse's Namespace, but for the name
        sys.exit(run(args))  # type: ignore[arg-type]

from .cli import main

sys.exit(main())
