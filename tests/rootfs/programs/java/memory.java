import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

// Holds 1 GiB of touched memory, far above the run's limit.
public class Main {
    public static void main(String[] args) {
        List<byte[]> chunks = new ArrayList<>();
        for (int i = 0; i < 1024; i++) {
            byte[] c = new byte[1 << 20];
            Arrays.fill(c, (byte) 'x');
            chunks.add(c);
        }
        System.out.println("allocated " + chunks.size() + " MiB");
    }
}
