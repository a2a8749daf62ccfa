from oasis.cli import main

raise SystemExit(main())
