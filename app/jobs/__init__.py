"""Batch jobs: the OpenAI Batch API and DashScope's async embedding tasks, run cache first and at
background priority by saq workers inside the gateway processes, their state in Redis."""
