from carla_launcher.cli import main

main()
