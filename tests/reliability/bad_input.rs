//! Property tests at the agent API and the config loader.
