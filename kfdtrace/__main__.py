from kfdtrace.cli import main

main()
