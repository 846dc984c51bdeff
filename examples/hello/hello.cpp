#include <iostream>
#include <string>

int main() {
    std::string name = "world";
    std::cin >> name;
    std::cout << "hello, " << name << ", from C++ (g++ " << __GNUC__ << "." << __GNUC_MINOR__
              << ", C++" << __cplusplus / 100 % 100 << ")\n";
}
