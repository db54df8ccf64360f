"""Land-cover inference: legends, weak labels, clustering, constraints, the prior, segmentation."""
