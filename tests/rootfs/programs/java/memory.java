import java.util.Arrays;

// One 768 MiB array, far above the run's limit. With -Xmx at the limit the JVM would refuse
// it with OutOfMemoryError (a runtime_error); the run must end as memory_limit instead.
public class Main {
    public static void main(String[] args) {
        byte[] big = new byte[768 << 20];
        Arrays.fill(big, (byte) 'x');
        System.out.println("allocated " + (big.length >> 20) + " MiB");
    }
}
