"""Kafka edges: topics, (de)serialisation and validation, producers, consumers and the workers' main loops.

The only package that does Kafka I/O; it wires features, models and monitoring together.
"""
