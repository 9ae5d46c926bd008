"""Image augmentation in the graph, by job: ops.py (the uint8 image ops and their shared helpers),
randaugment.py (the MPL reference's RandAugment), autoaugment.py (tensorflow/models' AutoAugment). The
views training feeds its networks are built from them in mpltool/data/views.py."""
