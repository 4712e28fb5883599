from clip_inversion.cli import main

main()
