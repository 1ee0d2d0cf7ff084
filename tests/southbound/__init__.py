"""Unit tests of the southbound clients against Cisco's documented CNC 7.x and PCA shapes."""
