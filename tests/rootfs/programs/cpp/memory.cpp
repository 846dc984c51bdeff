#include <iostream>
#include <vector>
// Allocates and touches 1 GiB, far above the run's limit.
int main() {
    std::vector<std::vector<char>> chunks;
    for (int i = 0; i < 1024; i++) chunks.emplace_back(1 << 20, 'x');
    std::cout << "allocated " << chunks.size() << " MiB\n";
}
