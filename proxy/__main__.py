"""`python -m proxy` is the `spiffe-sidecar` command."""

from proxy.cli import main

raise SystemExit(main())
