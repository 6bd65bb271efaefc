"""`python -m controller` is `foylectl`."""

from controller.cli.main import main

raise SystemExit(main())
