"""The Workload API's wire: protobuf messages and a small sans-IO gRPC layer on h2."""
