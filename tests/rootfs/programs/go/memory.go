package main

import "fmt"

// Allocates and touches 1 GiB, far above the run's limit.
func main() {
	chunks := make([][]byte, 0, 1024)
	for i := 0; i < 1024; i++ {
		c := make([]byte, 1<<20)
		for j := range c {
			c[j] = 'x'
		}
		chunks = append(chunks, c)
	}
	fmt.Println("allocated", len(chunks), "MiB")
}
