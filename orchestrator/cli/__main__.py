from nasfleet.orchestrator.cli.app import main

main()
