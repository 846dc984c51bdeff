// Burns CPU forever: ends as time_limit when the CPU budget runs out.
int main(void) {
    for (volatile unsigned long i = 0;; ++i) {
    }
}
