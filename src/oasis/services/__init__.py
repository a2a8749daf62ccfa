"""Domain logic. No FastAPI imports here: routes call services, services raise OasisError."""
