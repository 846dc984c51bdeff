package main

func main() {
	var m map[string]int
	m["deliberate runtime error"] = 1 // panics: exit status 2
}
