"""The partitioner the template names; the stand-in's partitions are fixed slices (see __init__)."""


class IidPartitioner:
    def __init__(self, num_partitions: int):
        self.num_partitions = num_partitions
