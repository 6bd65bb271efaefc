"""`python -m controller` is `foylectl`."""

from controller.cli import main

raise SystemExit(main())
