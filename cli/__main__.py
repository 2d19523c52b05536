from recstream.main import main

main()
