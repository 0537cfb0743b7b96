"""Where the code runs: the processes (``dist``: the process group and its collectives; ``launcher``: a worker that
dies with its launcher) and the device (``device``: device, mixed precision, loader workers). Imports no other cgh
package but ``cgh.errors``."""
