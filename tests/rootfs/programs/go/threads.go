package main

import (
	"fmt"
	"runtime"
	"sync"
)

// Goroutines on several OS threads (LockOSThread forces one thread per goroutine).
func main() {
	var wg sync.WaitGroup
	results := make([]int, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			runtime.LockOSThread()
			sum := 0
			for j := 0; j < 1000000; j++ {
				sum += j % (i + 1)
			}
			results[i] = sum
		}(i)
	}
	wg.Wait()
	fmt.Println("threads ok", len(results))
}
