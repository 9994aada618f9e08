"""Scale out on Ray: evaluate on large data sets and fan out independent jobs over a cluster.

Optional (``pip install 'ptsq[ray]'``) and off by default: nothing imports ray unless a caller asks for
it (``--ray auto|ADDRESS``, ``ray=`` in the API). Modules:

- :mod:`ptsq.distributed.cluster`: connect (start a local instance or join a cluster), ship ptsq's code,
  shut down what was started;
- :mod:`ptsq.distributed.fanout`: run independent jobs as Ray tasks with time limits and crash isolation;
- :mod:`ptsq.distributed.evaluate`: evaluation batches run by actors that load every model once.
"""
