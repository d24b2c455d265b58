"""Where sessions are counted and resumed: in this process, or in Redis shared by replicas."""
