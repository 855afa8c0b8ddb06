import sys

if sys.argv[1:2] == ["finalize"]:
    # Jibri stays BUSY until its finalize script returns: dispatch before the daemon's imports,
    # and hand every argument on untouched (options may come before the directory).
    from agent.finalize import finalize_main

    sys.exit(finalize_main(sys.argv[2:]))

from agent.cli import main

sys.exit(main())
