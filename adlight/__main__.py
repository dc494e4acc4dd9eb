from adlight.cli import main

main()
