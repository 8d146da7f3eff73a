"""One module per `carla-launch` command: parse options, call one function, print."""
