from resnet_edge.cli import main

main()
