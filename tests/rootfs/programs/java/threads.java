import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.ArrayList;
import java.util.List;

public class Main {
    public static void main(String[] args) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(16);
        List<Future<Long>> results = new ArrayList<>();
        for (int i = 0; i < 16; i++) {
            final int k = i + 1;
            results.add(pool.submit(() -> {
                long sum = 0;
                for (int j = 0; j < 1_000_000; j++) sum += j % k;
                return sum;
            }));
        }
        for (Future<Long> f : results) f.get();
        pool.shutdown();
        System.out.println("threads ok");
    }
}
