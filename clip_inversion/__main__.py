from clip_inversion.usage import main

main()
