raise ValueError("deliberate runtime error")
