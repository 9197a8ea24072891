"""Driver conformance kit: one battery every driver runs against its simulator."""
