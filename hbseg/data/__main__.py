from hbseg.data.cli import main

main()
