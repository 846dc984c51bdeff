import java.util.Scanner;

public class Main {
    public static void main(String[] args) {
        Scanner in = new Scanner(System.in);
        String name = in.hasNext() ? in.next() : "world";
        System.out.println("hello, " + name + ", from Java " + System.getProperty("java.version"));
    }
}
