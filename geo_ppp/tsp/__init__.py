"""The travelling salesman problem through the generic core: the paper's third application.

A DDPM trained on 64 x 64 images of optimal tours (:mod:`geo_ppp.tsp.prior`) is the prior; a new
instance is solved by optimising a soft adjacency whose rendering (:mod:`geo_ppp.tsp.render`) the prior
finds likely (:mod:`geo_ppp.tsp.solve`, through :func:`geo_ppp.core.pnp.plug_and_play`), then decoded
greedily and improved by batched 2-opt (:mod:`geo_ppp.tsp.decode`). Nothing here imports the
geospatial layers.
"""

from geo_ppp.tsp.instances import random_instances, tour_length
from geo_ppp.tsp.solve import SolveConfig, solve_tsp

__all__ = ["SolveConfig", "random_instances", "solve_tsp", "tour_length"]
