from parkedge_sim.central.cli import main

raise SystemExit(main())
