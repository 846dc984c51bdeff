throw new Error("deliberate runtime error");
