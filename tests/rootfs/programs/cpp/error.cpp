#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <vector>
int main() {
    std::vector<int> v(3);
    try {
        return v.at(10);
    } catch (const std::out_of_range& e) {
        std::cerr << "deliberate runtime error: " << e.what() << '\n';
        std::exit(3);
    }
}
