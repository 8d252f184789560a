"""Model families, one sub-package each; ``wavegen.family`` is the seam they implement."""
