"""The release pipeline: a typed library that builds, tests, scans, pushes, signs and deploys the
gateway's image. It never imports invoke; ``tasks.py`` wires it to the command line."""
