"""The HTTP API: Litestar + msgspec over the SQL contract (docs/ARCHITECTURE.md, "The contract").
Controllers are thin: each request is one transaction acting as its caller, and RLS decides what the caller may see."""
