#include <stdio.h>
#include <stdlib.h>
int main(void) {
    fprintf(stderr, "deliberate runtime error\n");
    exit(3);
}
