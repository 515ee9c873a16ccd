"""The streamer: real-time prices over Twelve Data's WebSocket into Redis and Postgres."""
