"""The methods a config may name, and the two facts about each that the config's checks need: the teacher's view and
whether the method keeps a queue. Kept here, a leaf, so that validating a config does not import the methods (they
import the config: that was an import circle). The methods themselves (cgh.methods, ``METHODS``) own their
``teacher_view``; tests/unit/test_methods.py holds this table and theirs in step.
"""

from __future__ import annotations

# name -> the teacher's view ('weak': crop + flip; 'strong': the MoCo-v2 recipe), in cgh.methods.METHODS' order
TEACHER_VIEWS = {"mocov2": "strong", "ressl": "weak", "cgh": "weak", "byol": "strong", "simsiam": "strong",
                 "simclr": "strong"}
METHOD_NAMES = tuple(TEACHER_VIEWS)
# Methods with a queue of past keys (method.queue_size applies to these only)
QUEUE_METHODS = ("mocov2", "ressl", "cgh")
