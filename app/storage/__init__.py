"""Where job files live (input uploads, output and error parts): one small interface, two backends."""
